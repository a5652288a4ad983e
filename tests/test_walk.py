"""The guest walker (paging_tmpl.h) on hand-built page tables: 2-level, PAE, 4/5-level, EPT."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pykvmmu import role as R
from pykvmmu.errors import PykvmmuError
from pykvmmu.vcpu import (CR0_PE, CR0_PG, CR4_PAE, CR4_PKE, CR4_PSE, CR4_SMEP, EFER_LMA,
                          EFER_LME, EptContext, Vcpu)
from pykvmmu.walk import (GuestMemory, GuestMmu, WalkError, WalkReplayError, replay_records,
                          shadow_pages, walk_addr, walk_observed)

P, W, U, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80
NX = 1 << 63
PF_W, PF_U, PF_F = 2, 4, 16


def build(mem, root, addr, entries, size=8, bits=9):
    """Write a chain of gptes for ``addr``: entries = [(level, gpte)], each table at the gfn
    the previous gpte names (the first at ``root``)."""
    table = root
    for level, gpte in entries:
        idx = (addr >> (12 + bits * (level - 1))) & ((1 << bits) - 1)
        mem.write(table + idx * size, gpte, size)
        table = gpte & 0x000FFFFFFFFFF000 if size == 8 else gpte & 0xFFFFF000


def four_level(mem, addr, leaf_flags=P | W | U, upper=P | W | U, huge_at=None, leaf_pa=0x9000):
    ents = []
    nxt = 0x2000
    for level in (4, 3, 2, 1):
        if huge_at == level:
            ents.append((level, leaf_pa | leaf_flags | PS))
            break
        if level == 1:
            ents.append((1, leaf_pa | leaf_flags))
        else:
            ents.append((level, nxt | upper))
            nxt += 0x1000
    build(mem, 0x1000, addr, ents)


def test_four_level_walk_sets_accessed_and_dirty_and_writes_back():
    mem = GuestMemory()
    four_level(mem, 0x7000_1234_5000)
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    w = walk_addr(mmu, 0x7000_1234_5678, PF_W, mem)
    assert w.ok and w.gfn == 0x9 and w.gpa == 0x9678 and w.leaf_level == 1
    assert [lv.level for lv in w.levels] == [4, 3, 2, 1]
    assert [lv.table_gfn for lv in w.levels] == [1, 2, 3, 4]
    assert all(lv.set_accessed for lv in w.levels) and w.levels[-1].set_dirty
    assert not any(lv.set_dirty for lv in w.levels[:-1])
    assert w.dirty and w.ad_update and w.pte_access == 7
    names = [e[0] for e in w.events]
    assert names == (["kvm_mmu_pagetable_walk"] + ["kvm_mmu_paging_element"] * 4
                     + ["kvm_mmu_set_accessed_bit"] * 4 + ["kvm_mmu_set_dirty_bit"])
    # trace gpa = (table_gfn << 12) + index * 8
    assert w.events[5][1]["gpa"] == 0x1000 + 8 * ((0x7000_1234_5678 >> 39) & 511)
    # written back: the second walk sets nothing
    w2 = walk_addr(mmu, 0x7000_1234_5678, PF_W, mem)
    assert not w2.ad_update and all(lv.gpte & A for lv in w2.levels)
    assert w2.levels[-1].gpte & D
    # worked role words: root 0x3704, children keep the parent's bits
    sps = shadow_pages(mmu, w)
    assert [hex(s.role) for s in sps] == ["0x3704", "0x3703", "0x3702", "0x3701"]
    assert [s.gfn for s in sps] == [1, 2, 3, 4]


def test_read_of_clean_page_drops_write_and_sets_only_accessed():
    mem = GuestMemory()
    four_level(mem, 0x5000)
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    w = walk_addr(mmu, 0x5000, 0, mem)
    assert w.ok and w.pte_access == 5          # protect_clean_gpte: W off, D clear
    assert not w.levels[-1].set_dirty and w.levels[-1].set_accessed and not w.dirty
    w = walk_addr(mmu, 0x5000, PF_W, mem)      # accessed already: the write still sets D
    assert w.ad_update and w.levels[-1].set_dirty and not w.levels[0].set_accessed
    assert walk_addr(mmu, 0x5000, 0, mem).pte_access == 7   # now dirty: W kept on reads


def test_accessed_all_set_read_skips_update():
    mem = GuestMemory()
    four_level(mem, 0x5000, leaf_flags=P | W | U | A, upper=P | W | U | A)
    w = walk_addr(GuestMmu.for_vcpu(Vcpu(cr3=0x1000)), 0x5000, 0, mem)
    assert not w.ad_update and len(w.events) == 5


def test_not_present_and_error_codes():
    mem = GuestMemory()
    four_level(mem, 0x5000, leaf_flags=W | U)          # leaf not present
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    w = walk_addr(mmu, 0x5000, PF_W | PF_U, mem)
    assert not w.ok and w.fault.error_code == PF_W | PF_U and w.fault.level == 1
    assert w.fault.reason == "not-present" and not w.fault.rsvd
    assert w.events[-1] == ("kvm_mmu_walker_error", {"pferr": 6})
    # fetch: F reported because EFER.NX=1 (or SMEP)
    assert walk_addr(mmu, 0x5000, PF_F, mem).fault.error_code == PF_F
    nonx = GuestMmu.for_vcpu(Vcpu(cr3=0x1000, efer=EFER_LME | EFER_LMA))
    assert walk_addr(nonx, 0x5000, PF_F, mem).fault.error_code == 0
    smep = GuestMmu.for_vcpu(Vcpu(cr3=0x1000, efer=EFER_LME | EFER_LMA, cr4=CR4_PAE | CR4_SMEP))
    assert walk_addr(smep, 0x5000, PF_F, mem).fault.error_code == PF_F
    # the walk's A/D are never touched on a fault
    assert mem.read(0x1000) & A == 0


def test_nx_and_nx_reserved_without_efer_nx():
    mem = GuestMemory()
    four_level(mem, 0x5000, leaf_flags=P | W | U | NX)
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    w = walk_addr(mmu, 0x5000, PF_F, mem)
    assert w.fault.reason == "permission" and w.fault.error_code == P | PF_F
    assert walk_addr(mmu, 0x5000, 0, mem).pte_access == 4    # ACC_EXEC off, clean: W off
    nonx = GuestMmu.for_vcpu(Vcpu(cr3=0x1000, efer=EFER_LME | EFER_LMA))
    w = walk_addr(nonx, 0x5000, 0, mem)
    assert w.fault.rsvd and w.fault.error_code == 0x9 and w.fault.level == 1


def test_nx_in_upper_level_accumulates():
    mem = GuestMemory()
    build(mem, 0x1000, 0x5000, [(4, 0x2000 | P | W | U | NX), (3, 0x3000 | P | W | U),
                                (2, 0x4000 | P | W | U), (1, 0x9000 | P | W | U | D)])
    w = walk_addr(GuestMmu.for_vcpu(Vcpu(cr3=0x1000)), 0x5000, 0, mem)
    assert [lv.access for lv in w.levels] == [6, 6, 6, 6]
    assert [lv.pt_access for lv in w.levels] == [7, 6, 6, 6]


def test_cr0_wp_zero_supervisor_write_rule():
    mem = GuestMemory()
    four_level(mem, 0x5000, leaf_flags=P | U | D)          # read-only user page
    wp0 = GuestMmu.for_vcpu(Vcpu(cr3=0x1000, cr0=CR0_PE | CR0_PG))
    w = walk_addr(wp0, 0x5000, PF_W, mem)
    assert w.ok and w.pte_access == 5
    assert w.fault_pte_access(wp0) == 3                    # W added, U removed
    wp1 = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    assert walk_addr(wp1, 0x5000, PF_W, mem).fault.error_code == P | PF_W
    smep = GuestMmu.for_vcpu(Vcpu(cr3=0x1000, cr0=CR0_PE | CR0_PG, cr4=CR4_PAE | CR4_SMEP))
    w = walk_addr(smep, 0x5000, PF_W, mem)
    assert w.fault_pte_access(smep) == 2                   # and X removed under SMEP
    # a user write still faults with WP=0
    assert walk_addr(wp0, 0x5000, PF_W | PF_U, mem).fault.error_code == P | PF_W | PF_U
    # the direct children of a split huge page carry the modified access
    mem2 = GuestMemory()
    four_level(mem2, 0x200000, leaf_flags=P | U | D, huge_at=2, leaf_pa=0x400000)
    w = walk_addr(wp0, 0x201000, PF_W, mem2)
    sp = shadow_pages(wp0, w, goal_level=1)
    assert sp[-1].direct and R.unpack(R.DEFAULT_ERA, sp[-1].role).access == 3


@pytest.mark.parametrize("level,gpte,why", [
    (2, 0x400000 | P | W | PS | (1 << 13), "2M page with bit 13 (misaligned)"),
    (2, 0x400000 | P | W | PS | (1 << 20), "2M page with bit 20"),
    (3, 0x40000000 | P | W | PS | (1 << 29), "1G page with bit 29"),
    (4, 0x3000 | P | W | PS, "PML4E with PS"),
    (1, (1 << 48) | P, "PTE above MAXPHYADDR 48"),
])
def test_reserved_bits_give_rsvd_error(level, gpte, why):
    mem = GuestMemory()
    ents = [(4, 0x2000 | P | W), (3, 0x3000 | P | W), (2, 0x4000 | P | W), (1, 0x9000 | P)]
    ents = [e for e in ents if e[0] > level] + [(level, gpte)]
    build(mem, 0x1000, 0, ents)
    w = walk_addr(GuestMmu.for_vcpu(Vcpu(cr3=0x1000)), 0, PF_W, mem)
    assert not w.ok and w.fault.rsvd and w.fault.level == level, why
    assert w.fault.error_code == 0x8 | P | PF_W
    assert [lv.level for lv in w.levels][-1] == level


def test_huge_pages_and_gbpages():
    mem = GuestMemory()
    build(mem, 0x1000, 0x4020_3456, [(4, 0x2000 | P | W), (3, 0x40000000 | P | W | PS | A | D)])
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    w = walk_addr(mmu, 0x4020_3456, 0, mem)
    assert w.ok and w.leaf_level == 3 and w.gfn == 0x40203
    nogb = GuestMmu.for_vcpu(Vcpu(cr3=0x1000, gbpages=False))
    assert walk_addr(nogb, 0x4020_3456, 0, mem).fault.rsvd
    sps = shadow_pages(mmu, w, goal_level=1)
    assert [(s.level, s.direct, s.kind) for s in sps] == [
        (4, False, "root"), (3, False, "child"), (2, True, "direct"), (1, True, "direct")]
    assert sps[2].gfn == 0x40000 and sps[3].gfn == 0x40200
    # PAT bit 12 is not reserved in a 2M entry
    mem2 = GuestMemory()
    four_level(mem2, 0x600000, leaf_flags=P | W | A | D | (1 << 12), huge_at=2, leaf_pa=0x600000)
    w = walk_addr(mmu, 0x600000, 0, mem2)
    assert w.ok and w.gfn == 0x600


def test_amd_nonleaf_bit8():
    mem = GuestMemory()
    four_level(mem, 0x5000, upper=P | W | U | 0x100)
    assert walk_addr(GuestMmu.for_vcpu(Vcpu(cr3=0x1000)), 0x5000, 0, mem).ok
    w = walk_addr(GuestMmu.for_vcpu(Vcpu(cr3=0x1000, amd=True)), 0x5000, 0, mem)
    assert w.fault.rsvd and w.fault.level == 4


def test_five_level_and_passthrough_nested_npt():
    mem = GuestMemory()
    addr = 0x0123_4567_8000
    build(mem, 0x1000, addr, [(5, 0x2000 | P | W | U), (4, 0x3000 | P | W | U),
                              (3, 0x4000 | P | W | U), (2, 0x5000 | P | W | U),
                              (1, 0x9000 | P | W | U)])
    v5 = Vcpu.long_mode(la57=True, cr3=0x1000)
    w = walk_addr(GuestMmu.for_vcpu(v5), addr, 0, mem)
    assert w.ok and [lv.level for lv in w.levels] == [5, 4, 3, 2, 1] and w.gfn == 9
    # nested NPT: a 4-level L1 NPT under a 5-level host gets a passthrough root
    mem4 = GuestMemory()
    four_level(mem4, 0x5000)
    npt = GuestMmu.for_vcpu(Vcpu(cr3=0x1000), mmu="nested-npt", tdp_level=5)
    w = walk_addr(npt, 0x5000, 0, mem4)
    sps = shadow_pages(npt, w)
    root = R.unpack(R.DEFAULT_ERA, sps[0].role)
    assert root.level == 5 and root.passthrough == 1 and root.guest_mode == 1
    assert [s.level for s in sps] == [5, 4, 3, 2, 1]
    assert all(R.unpack(R.DEFAULT_ERA, s.role).passthrough == 0 for s in sps[1:])
    assert sps[1].gfn == sps[0].gfn == 1


def test_pae_pdptes():
    mem = GuestMemory()
    cr3 = 0x1000 + 0x20                                  # 32-byte aligned PDPT
    addr = 0xC020_1000
    mem.write(cr3 + 8 * 3, 0x2000 | P)
    build(mem, 0x2000, addr, [(2, 0x3000 | P | W | U), (1, 0x9000 | P | W | U | NX)])
    mmu = GuestMmu.for_vcpu(Vcpu.pae(cr3=cr3))
    w = walk_addr(mmu, addr, 0, mem)
    assert w.ok and [lv.level for lv in w.levels] == [3, 2, 1]
    assert w.levels[0].table_gfn is None and w.max_level == 2
    assert w.events[1] == ("kvm_mmu_paging_element", {"pte": 0x2001, "level": 3})
    assert w.pte_access == 4 and w.gfn == 9               # NX honoured, clean: W off
    sps = shadow_pages(mmu, w)
    assert [(s.level, s.gfn) for s in sps] == [(2, 2), (1, 3)]
    assert all((s.role >> 5) & 3 == 0 and (s.role >> 4) & 1 == 0 for s in sps)
    # a PDPTE that is not present: error code without P, at level 3
    w = walk_addr(mmu, 0x0, PF_W, mem)
    assert w.fault.level == 3 and w.fault.error_code == PF_W
    assert [e[0] for e in w.events] == ["kvm_mmu_pagetable_walk", "kvm_mmu_paging_element",
                                        "kvm_mmu_walker_error"]
    # PDPTE registers override memory
    regs = GuestMmu.for_vcpu(Vcpu.pae(cr3=cr3, pdptrs=(0, 0, 0, 0x2001)))
    assert walk_addr(regs, addr, 0, GuestMemory()).levels[0].gpte == 0x2001


def test_legacy_32bit_pse_pse36_and_quadrants():
    mem = GuestMemory()
    addr = 0x0060_1000                                     # bit 21 set: quadrant 1
    build(mem, 0x1000, addr, [(2, 0x2000 | P | W | U), (1, 0x9000 | P | W | U | D)], 4, 10)
    v = Vcpu.legacy32(cr3=0x1000)
    mmu = GuestMmu.for_vcpu(v)
    w = walk_addr(mmu, addr, PF_W | PF_U, mem)
    assert w.ok and w.gfn == 9 and w.levels[0].pt_access == 6   # the u64 ~0 quirk at the top
    assert mem.read(0x2000 + 4 * 0x201, 4) & A                  # 4-byte gpte written back
    sps = shadow_pages(mmu, w)
    f = [R.unpack(R.DEFAULT_ERA, s.role) for s in sps]
    assert [x.level for x in f] == [2, 1] and all(x.has_4_byte_gpte for x in f)
    assert f[0].quadrant == 0 and f[1].quadrant == 1
    # 4M page with PSE-36 bits 13..16 -> gpa bits 32..35
    mem.write(0x1000 + 4 * 3, 0x00C00000 | P | W | PS | A | D | (0b1010 << 13), 4)
    w = walk_addr(mmu, 0x00C0_5000, 0, mem)
    assert w.ok and w.leaf_level == 2 and w.gpa == 0xA_00C0_5000
    # bits 17..21 are reserved in a 4M PDE
    mem.write(0x1000 + 4 * 4, 0x01000000 | P | PS | (1 << 17), 4)
    assert walk_addr(mmu, 0x0100_0000, 0, mem).fault.rsvd
    # without CR4.PSE, bit 7 is ignored: the PDE points to a page table
    nopse = GuestMmu.for_vcpu(Vcpu.legacy32(pse=False, cr3=0x1000))
    mem.write(0x1000 + 4 * 5, 0x2000 | P | W | PS, 4)
    w = walk_addr(nopse, 0x0140_0000, 0, mem)
    assert [lv.level for lv in w.levels] == [2, 1] and w.levels[1].table_gfn == 2


def test_pkeys():
    mem = GuestMemory()
    four_level(mem, 0x5000, leaf_flags=P | W | U | A | D | (5 << 59))
    v = Vcpu(cr3=0x1000, cr4=CR4_PAE | CR4_PKE, pkru=1 << 10)   # key 5 AD
    w = walk_addr(GuestMmu.for_vcpu(v), 0x5000, PF_U, mem)
    assert w.fault.reason == "pkey" and w.fault.error_code == 0x25 and w.pte_pkey == 5
    assert walk_addr(GuestMmu.for_vcpu(v.replace(pkru=2 << 10)), 0x5000, PF_U, mem).ok
    w = walk_addr(GuestMmu.for_vcpu(v.replace(pkru=2 << 10)), 0x5000, PF_U | PF_W, mem)
    assert w.fault.error_code == 0x27
    # a fetch is never checked against PKRU
    assert walk_addr(GuestMmu.for_vcpu(v), 0x5000, PF_U | PF_F, mem).ok


def ept_mmu(ad=True, execonly=False, huge=3, level=4):
    eptp = 0x1000 | ((level - 1) << 3) | (0x40 if ad else 0) | 6
    return GuestMmu.for_ept(EptContext(eptp, execonly=execonly, huge_page_level=huge))


def ept_tables(mem, addr, leaf, level=4):
    ents = [(lv, (0x2000 + 0x1000 * (level - lv)) | 7) for lv in range(level, 1, -1)]
    build(mem, 0x1000, addr, ents + [(1, leaf)])


def test_ept_permissions_and_exit_qualification():
    mem = GuestMemory()
    ept_tables(mem, 0x5000, 0x9000 | 1 | (6 << 3))            # read-only WB
    mmu = ept_mmu()
    w = walk_addr(mmu, 0x5000, PF_U, mem)                     # a read (PFERR_USER in EPT)
    assert w.ok and w.pte_access == 4
    w = walk_addr(mmu, 0x5000, PF_W, mem)
    assert w.fault.reason == "permission" and w.fault.error_code == P | PF_W
    assert w.fault.ept_exit_qualification == 0x2 | (1 << 3)
    w = walk_addr(mmu, 0x5000, PF_F, mem)                     # no F in the code: no NX/SMEP
    assert w.fault.error_code == P and w.fault.ept_exit_qualification == 0x4 | (1 << 3)
    assert shadow_pages(mmu, walk_addr(mmu, 0x5000, PF_U, mem))[0].role == 0x00020704


def test_ept_exec_only_and_misconfig():
    mem = GuestMemory()
    ept_tables(mem, 0x5000, 0x9000 | 4 | (6 << 3))            # execute-only
    w = walk_addr(ept_mmu(), 0x5000, PF_F, mem)
    assert w.fault.rsvd and w.fault.ept_exit_qualification is None
    w = walk_addr(ept_mmu(execonly=True), 0x5000, PF_F, mem)
    assert w.ok and w.pte_access == 1
    assert walk_addr(ept_mmu(execonly=True), 0x5000, PF_U, mem).fault.reason == "permission"
    for leaf in (0x9000 | 2 | (6 << 3), 0x9000 | 6 | (6 << 3), 0x9000 | 7 | (2 << 3),
                 0x9000 | 7 | (7 << 3)):
        mem2 = GuestMemory()
        ept_tables(mem2, 0x5000, leaf)
        assert walk_addr(ept_mmu(execonly=True), 0x5000, PF_U, mem2).fault.rsvd, hex(leaf)


def test_ept_ad_bits_and_no_ad():
    mem = GuestMemory()
    ept_tables(mem, 0x5000, 0x9000 | 7 | (6 << 3))
    w = walk_addr(ept_mmu(), 0x5000, PF_W, mem)
    assert w.ok and w.levels[-1].new_gpte & (3 << 8) == 3 << 8
    assert mem.read(0x1000) & (1 << 8)
    mem = GuestMemory()
    ept_tables(mem, 0x5000, 0x9000 | 7 | (6 << 3))
    mmu = ept_mmu(ad=False)
    w = walk_addr(mmu, 0x5000, 0, mem)
    assert w.ok and not w.ad_update and w.pte_access == 7     # no protect_clean without A/D
    assert R.unpack(R.DEFAULT_ERA, mmu.root_role).ad_disabled == 1


def test_ept_huge_pages():
    mem = GuestMemory()
    build(mem, 0x1000, 0x40000000, [(4, 0x2000 | 7), (3, 0x40000000 | 7 | PS | (6 << 3))])
    assert walk_addr(ept_mmu(), 0x4000_1000, PF_U, mem).gfn == 0x40001
    assert walk_addr(ept_mmu(huge=2), 0x4000_1000, PF_U, mem).fault.rsvd
    mem.write(0x2000 + 8 * 1, 0x50000000 | 7 | PS | (1 << 12))  # bit 12 reserved in EPT 1G
    assert walk_addr(ept_mmu(), 0x4000_1000, PF_U, mem).fault.rsvd


def test_walk_observed_matches_trace_order_and_refuses_mismatches():
    mem = GuestMemory()
    four_level(mem, 0x5000)
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    a = walk_addr(mmu, 0x5000, PF_W, mem, write_back=False)
    seq = [(e[1]["pte"], e[1]["level"]) for e in a.events if e[0] == "kvm_mmu_paging_element"]
    b = walk_observed(mmu, 0x5000, PF_W, seq)
    assert a == b
    assert walk_observed(mmu, 0x5000, PF_W, [p for p, _ in seq]) == a
    assert walk_observed(mmu, 0x5000, PF_W, [{"pte": p, "level": lv} for p, lv in seq]) == a
    with pytest.raises(WalkReplayError, match="truncated"):
        walk_observed(mmu, 0x5000, PF_W, seq[:2])
    with pytest.raises(WalkReplayError, match="left after"):
        walk_observed(mmu, 0x5000, PF_W, seq + seq[:1])
    with pytest.raises(WalkReplayError, match="level 3"):
        walk_observed(mmu, 0x5000, PF_W, [(seq[0][0], 4), (seq[1][0], 2)])


def test_trace_line_example_replays():
    """LKML 2023 sample: 'kvm_mmu_pagetable_walk: addr ffffffff810551b8 pferr 10 F' then
    'kvm_mmu_paging_element: pte 2929067 level 4' (fact sheet 6.4): the PML4E's table gfn."""
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    with pytest.raises(WalkReplayError, match="truncated"):
        walk_observed(mmu, 0xffffffff810551b8, 0x10, [(0x2929067, 4)])


def test_refused_inputs_change_nothing():
    mem = GuestMemory()
    four_level(mem, 0x5000)
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    for bad in (0x8, 0x20, 1 << 31):
        with pytest.raises(PykvmmuError, match="access"):
            walk_addr(mmu, 0x5000, bad, mem)
    # bits 32..63 (PFERR_GUEST_FINAL/PAGE, IMPLICIT) are carried, not refused
    assert walk_addr(mmu, 0x5000, 1 << 32, mem, write_back=False).events[0][1]["pferr"] == 0
    with pytest.raises(PykvmmuError, match="addr"):
        walk_addr(mmu, 1 << 64, 0, mem)
    with pytest.raises(WalkError, match="GuestMemory"):
        walk_addr(mmu, 0x5000, 0, [1, 2])
    with pytest.raises(WalkError, match="CR0.PG=0"):
        GuestMmu.for_vcpu(Vcpu.real_mode())
    with pytest.raises(WalkError, match="wider"):
        walk_addr(GuestMmu.for_vcpu(Vcpu.legacy32(cr3=0x1000)), 0, 0, lambda gpa: 1 << 40)
    with pytest.raises(WalkError, match="visible"):
        walk_addr(mmu, 0x5000, 0, mem, visible=3)
    with pytest.raises(WalkError, match="tdp_level"):
        GuestMmu.for_vcpu(Vcpu(), mmu="nested-npt", tdp_level=3)
    with pytest.raises(WalkError, match="mode"):
        GuestMmu(**{**mmu.__dict__, "mode": "6level"})
    w = walk_addr(mmu, 0x5000, 0, mem, write_back=False)
    with pytest.raises(WalkError, match="GuestMmu"):
        w.fault_pte_access(None)
    with pytest.raises(WalkError, match="goal_level"):
        shadow_pages(mmu, w, goal_level=2)
    assert mem.read(0x1000) & A == 0


def test_callback_and_dict_sources():
    mem = GuestMemory()
    four_level(mem, 0x5000)
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    a = walk_addr(mmu, 0x5000, 0, lambda gpa: mem.read(gpa))
    d = {gpa: mem.read(gpa) for gpa in range(0x1000, 0x5000, 8) if mem.read(gpa)}
    b = walk_addr(mmu, 0x5000, 0, d)
    assert a == b and d[0x1000] & A and not mem.read(0x1000) & A


# -- form (a) == form (b) over random tables ------------------------------------------------

_MODES = {
    "4level": lambda: GuestMmu.for_vcpu(Vcpu(cr3=0x1000, cr4=CR4_PAE | CR4_SMEP)),
    "5level": lambda: GuestMmu.for_vcpu(Vcpu.long_mode(la57=True, cr3=0x1000)),
    "pae": lambda: GuestMmu.for_vcpu(Vcpu.pae(cr3=0x1000)),
    "32bit": lambda: GuestMmu.for_vcpu(Vcpu.legacy32(cr3=0x1000, cr4=CR4_PSE)),
    "ept": lambda: ept_mmu(execonly=True),
}


@given(mode=st.sampled_from(sorted(_MODES)), addr=st.integers(0, (1 << 32) - 1),
       access=st.sampled_from([0, PF_W, PF_U, PF_F, PF_W | PF_U, PF_U | PF_F, P | PF_W]),
       flags=st.lists(st.integers(0, (1 << 64) - 1), min_size=5, max_size=5))
def test_memory_walk_equals_observed_walk(mode, addr, access, flags):
    mmu = _MODES[mode]()
    mem = GuestMemory()
    size = mmu.gpte_size
    bits = 10 if size == 4 else 9
    table = 0x1000
    level = mmu.root_level
    if mode == "pae":
        mem.write(0x1000 + 8 * ((addr >> 30) & 3), 0x2000 | (flags[4] & 1))
        table, level = 0x2000, 2
    for i in range(level, 0, -1):
        nxt = 0x10000 * (6 - i)
        noise = flags[i - 1] & (0xFFF | (0xFFF << 52) if size == 8 else 0xFFF)
        gpte = (nxt | noise) & ((1 << (8 * size)) - 1)
        mem.write(table + ((addr >> (12 + bits * (i - 1))) & ((1 << bits) - 1)) * size, gpte, size)
        table = nxt
    a = walk_addr(mmu, addr, access, mem, write_back=False)
    seq = [(e[1]["pte"], e[1]["level"]) for e in a.events if e[0] == "kvm_mmu_paging_element"]
    b = walk_observed(mmu, addr, access, seq)
    assert a == b
    if a.ok and mmu.root_role is not None:
        assert len(shadow_pages(mmu, a)) >= 1
    # the walk writes exactly the A/D bits it reports
    walk_addr(mmu, addr, access, mem)
    for lv in a.levels:
        if lv.pte_gpa is not None:
            assert mem.read(lv.pte_gpa, size) == lv.new_gpte


def test_table_outside_memslots_fails_without_an_element():
    mem = GuestMemory()
    four_level(mem, 0x5000)
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    w = walk_addr(mmu, 0x5000, PF_W | PF_U, mem, visible=lambda gfn: gfn != 3)
    assert not w.ok and w.fault.reason == "no-memslot" and w.fault.level == 2
    assert w.fault.error_code == PF_W | PF_U
    assert [e[0] for e in w.events] == ["kvm_mmu_pagetable_walk"] + [
        "kvm_mmu_paging_element"] * 2 + ["kvm_mmu_walker_error"]
    seq = [(e[1]["pte"], e[1]["level"]) for e in w.events if e[0] == "kvm_mmu_paging_element"]
    assert walk_observed(mmu, 0x5000, PF_W | PF_U, seq, walker_error=6) == w
    with pytest.raises(WalkReplayError, match="walker_error=0x7"):
        walk_observed(mmu, 0x5000, PF_W | PF_U, seq, walker_error=7)
    # a not-present leaf replayed with its walker_error
    mem.write(0x4000 + 8 * 5, 0)
    a = walk_addr(mmu, 0x5000, PF_U, mem)
    seq = [(e[1]["pte"], e[1]["level"]) for e in a.events if e[0] == "kvm_mmu_paging_element"]
    assert walk_observed(mmu, 0x5000, PF_U, seq, walker_error=4) == a


@pytest.mark.parametrize("era,b4_indirect,b4_direct", [
    ("v5.0", 0, 0),            # cr4_pae: 0 for 4-byte gptes, forced 0 on direct pages
    ("v5.1", 0, 1),            # gpte_is_8_bytes: direct pages forced to 1
    ("v5.14", 0, 1),
    ("v5.17", 1, 1),           # has_4_byte_gpte inherited by direct children
    ("latest", 1, 1),
])
def test_32bit_children_roles_per_era(era, b4_indirect, b4_direct):
    """Direct children of a split 4M page carry the quadrant in every era (v5.x
    kvm_mmu_get_page tested the MMU's root level, not the page's bit 4)."""
    mem = GuestMemory()
    mem.write(0x1000 + 4 * 1, 0x00400000 | P | W | U | PS | A | D, 4)   # 4M at 4M
    mem.write(0x1000 + 4 * 2, 0x2000 | P | W | U | A, 4)
    mem.write(0x2000 + 4 * 0x200, 0x9000 | P | W | U | A | D, 4)
    mmu = GuestMmu.for_vcpu(Vcpu.legacy32(cr3=0x1000), era)
    w = walk_addr(mmu, 0x0060_0000, 0, mem)
    d = shadow_pages(mmu, w, goal_level=1)[-1]
    f = R.unpack(era, d.role)
    assert d.direct and f.level == 1 and f.quadrant == 1 and (d.role >> 4) & 1 == b4_direct
    w = walk_addr(mmu, 0x00A0_0000, 0, mem)
    c = shadow_pages(mmu, w)[-1]
    f = R.unpack(era, c.role)
    assert not c.direct and f.quadrant == 1 and (c.role >> 4) & 1 == b4_indirect


def _trace_lines(w, cpu=1, t0=100.0):
    from pykvmmu.perm import pfec_str
    fmt = {"kvm_mmu_pagetable_walk": lambda f: f"addr {f['addr']:x} pferr {f['pferr']:x} {pfec_str(f['pferr'])}",
           "kvm_mmu_paging_element": lambda f: f"pte {f['pte']:x} level {f['level']}",
           "kvm_mmu_set_accessed_bit": lambda f: f"gpa {f['gpa']:x}",
           "kvm_mmu_set_dirty_bit": lambda f: f"gpa {f['gpa']:x}",
           "kvm_mmu_walker_error": lambda f: f"pferr {f['pferr']:x} {pfec_str(f['pferr'])}"}
    return [f" qemu-1 [{cpu:03d}] ..... {t0 + i / 1e6:.6f}: {name}: {fmt[name](f)}"
            for i, (name, f) in enumerate(w.events)]


def test_replay_parsed_trace_records():
    from pykvmmu import trace
    mem = GuestMemory()
    four_level(mem, 0x5000)
    four_level(mem, 0x6000, leaf_flags=W | U)                  # not present
    mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000))
    a = walk_addr(mmu, 0x5000, PF_W, mem, write_back=False)
    b = walk_addr(mmu, 0x6000, PF_U, mem, write_back=False)
    la, lb = _trace_lines(a, cpu=1), _trace_lines(b, cpu=2, t0=100.000001)
    lines = [x for pair in zip(la, lb) for x in pair] + la[len(lb):] + lb[len(la):]
    lines.append(" qemu-1 [001] ..... 101.000000: kvm_mmu_spte_requested: gfn 9 pfn 1234 level 1")
    res = trace.parse(lines)
    assert not res.errors
    reps = replay_records(mmu, res.records)
    assert [r.cpu for r in reps] == [1, 2] and all(r.matches for r in reps)
    assert reps[0].walk == a and reps[1].walk.fault.error_code == PF_U
    # an observed walk that skipped the A/D update does not match the model
    cut = [x for x in la if "set_dirty_bit" not in x]
    reps = replay_records(lambda rec: mmu, trace.parse(cut).records)
    assert reps[0].walk is not None and not reps[0].matches
    # an element at the wrong level: the replay is refused, with the reason
    bad = la[:1] + [la[1].replace("level 4", "level 3")]
    reps = replay_records(mmu, trace.parse(bad).records)
    assert reps[0].walk is None and "observed level 3" in reps[0].error


def test_access_test_style_enumeration():
    """In the spirit of kvm-unit-tests' access test: every combination of PDE and PTE U/W/NX,
    leaf A/D, access type and CR0.WP/SMEP/SMAP/EFLAGS.AC, against the architectural rules
    (tests/test_perm.py's oracle): fault or not, the error code, and the A/D bits written."""
    import itertools

    from test_perm import arch_fault
    n = 0
    for wp, smep, smap, ac in itertools.product((False, True), repeat=4):
        cr0 = CR0_PE | CR0_PG | (1 << 16 if wp else 0)
        cr4 = CR4_PAE | (CR4_SMEP if smep else 0) | (1 << 21 if smap else 0)
        mmu = GuestMmu.for_vcpu(Vcpu(cr3=0x1000, cr0=cr0, cr4=cr4, rflags=0x2 | (ac << 18)))
        for pde_w, pde_u, pde_nx, w, u, nx, a, d in itertools.product((0, 1), repeat=8):
            for kind, user in itertools.product(("read", "write", "fetch"), (False, True)):
                access = {"read": 0, "write": PF_W, "fetch": PF_F}[kind] | (PF_U if user else 0)
                mem = GuestMemory()
                build(mem, 0x1000, 0x5000, [
                    (4, 0x2000 | P | W | U), (3, 0x3000 | P | W | U),
                    (2, 0x4000 | P | (W if pde_w else 0) | (U if pde_u else 0)
                     | (NX if pde_nx else 0)),
                    (1, 0x9000 | P | (W if w else 0) | (U if u else 0) | (NX if nx else 0)
                     | (A if a else 0) | (D if d else 0))])
                res = walk_addr(mmu, 0x5000, access, mem)
                fault = arch_fault(user_page=bool(pde_u and u), writable=bool(pde_w and w),
                                   executable=not (pde_nx or nx), write=kind == "write",
                                   user_mode=user, fetch=kind == "fetch", wp=wp, smep=smep,
                                   smap=smap, nx=True, ac=ac, implicit=False)
                leaf = mem.read(0x4000 + 8 * 5)
                if fault:
                    assert not res.ok and res.fault.error_code == P | access
                    assert leaf & (A | D) == (A if a else 0) | (D if d else 0)
                else:
                    assert res.ok and res.gfn == 9
                    assert leaf & A and bool(leaf & D) == bool(d or kind == "write")
                    assert all(mem.read(g) & A for g in (0x1000, 0x2000, 0x3000))
                n += 1
    assert n == 16 * 256 * 6
