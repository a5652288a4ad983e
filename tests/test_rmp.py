"""Unit tests for every RMP rule: layout, fields, lookups, states, instructions, checks, faults."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pykvmmu.errors import ArrayError, InputError, PykvmmuError
from pykvmmu.ref import rmp as ref
from pykvmmu.rmp import (BOOKKEEPING, FIELDS_DTYPE, HEADER_SIZE, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K,
                         Check, PageState, Rc, RmpEntry, RmpError, RmpFlags, RmpTable, decode,
                         handle_user_rmp_page_fault, kvm_max_private_mapping_level, make_lo,
                         page_state_raw, sev_handle_rmp_fault, sev_private_max_mapping_level,
                         table_bytes)

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
ASID = 7


def small(npfn=4 * 512, flags=0):
    return RmpTable(np.zeros(BOOKKEEPING + 16 * npfn, np.uint8), flags=flags)


def guest_2m(t, pfn=512, gfn=0x400, asid=ASID):
    assert t.rmpupdate(pfn, gpa=gfn << 12, assigned=1, pagesize=1, asid=asid) == Rc.SUCCESS


def guest_4k(t, pfn, gfn, asid=ASID):
    assert t.rmpupdate(pfn, gpa=gfn << 12, assigned=1, asid=asid) == Rc.SUCCESS


# ------------------------------------------------------------------ layout

def test_table_size_rule_worked_values():
    assert table_bytes(GiB) == 4 * MiB + 16 * KiB
    assert table_bytes(TiB) == 4 * GiB + 16 * KiB
    assert table_bytes(4097) == 16 * KiB + 32          # ceil(N / 4 KiB) entries
    assert ref.table_bytes(TiB) == table_bytes(TiB)


def test_create_is_exact_and_lazy():
    t = RmpTable.create(GiB)
    assert t.size == 4 * MiB + 16 * KiB and t.nr_pfns == GiB // 4096
    assert t.covered(t.nr_pfns - 1) and not t.covered(t.nr_pfns)


def test_apm_example_coverage():
    # RMP_BASE 0x10_0000, RMP_END 0x110_3FFF cover 4 GiB.
    base, end = 0x100000, 0x1103FFF
    t = RmpTable(np.zeros(end + 1 - base, np.uint8), rmp_base=base)
    assert t.nr_pfns * 4096 == 4 * GiB and t.rmp_end == end


def test_entry_address_and_little_endian_layout():
    t = small()
    guest_4k(t, 5, 0x123)
    raw = t.buffer[BOOKKEEPING + 16 * 5: BOOKKEEPING + 16 * 6]
    lo = int.from_bytes(raw[:8].tobytes(), "little")
    hi = int.from_bytes(raw[8:].tobytes(), "little")
    assert (lo, hi) == tuple(t.entry(5))
    assert not t.buffer[:BOOKKEEPING].any()            # bookkeeping untouched
    assert tuple(t.entries[0]) == (1 << 3, 0)           # the 2M-aligned entry counts pfn 5
    others = np.delete(t.entries, [0, 5], axis=0)
    assert not others.any()


def test_field_bit_positions():
    assert make_lo(assigned=1) == 1 << 0
    assert make_lo(pagesize=1) == 1 << 1
    assert make_lo(immutable=1) == 1 << 2
    assert make_lo(subpage_count=0x1FF) == 0x1FF << 3
    assert make_lo(gpa=(1 << 39) - 1) == ((1 << 39) - 1) << 12
    assert make_lo(asid=0x3FF) == 0x3FF << 51
    assert make_lo(vmsa=1) == 1 << 61 and make_lo(validated=1) == 1 << 62
    assert make_lo(lock=1) == 1 << 63
    e = RmpEntry(make_lo(assigned=1, asid=5, gpa=0x1234, validated=1, subpage_count=3),
                 0x44332211)
    assert (e.assigned, e.asid, e.gpa, e.validated, e.subpage_count) == (1, 5, 0x1234, 1, 3)
    assert e.vmpl == (0x11, 0x22, 0x33, 0x44)
    with pytest.raises(InputError, match="asid"):
        make_lo(asid=0x400)


@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))
def test_decode_batch_matches_scalar_and_reference(lo, hi):
    out = decode(np.array([lo], np.uint64), np.array([hi], np.uint64))[0]
    e = RmpEntry(lo, hi)
    for name in ("assigned", "pagesize", "immutable", "subpage_count", "gpa", "asid", "vmsa",
                 "validated", "lock"):
        assert int(out[name]) == getattr(e, name) == ref.field(lo, name)
    assert tuple(out["vmpl"]) == e.vmpl
    assert int(out["state"]) == page_state_raw(lo) == ref.state_of(lo)


def test_fields_batch_and_errors():
    t = small()
    guest_2m(t)
    f = t.fields(np.array([512, 513, 0], np.uint64))
    assert f.dtype == FIELDS_DTYPE
    assert list(f["assigned"]) == [1, 1, 0] and list(f["pagesize"]) == [1, 0, 0]
    assert int(f["asid"][0]) == ASID and int(f["gpa"][0]) == 0x400
    with pytest.raises(RmpError, match=r"pfns\[1\]=0x800"):
        t.fields(np.array([0, 2048], np.uint64))
    with pytest.raises(ArrayError):
        t.fields(np.array([0, 1], np.int64))


# ------------------------------------------------------------------ lookup

def test_lookup_rule_assigned_own_level_from_2m_entry():
    t = small()
    t.write_raw(1024, make_lo(pagesize=1))             # 2M-aligned entry: Page_Size=1, unassigned
    t.write_raw(1030, make_lo(assigned=1, asid=3, gpa=9))
    assert t.snp_lookup_rmpentry(1030) == (True, PG_LEVEL_2M)
    assert t.snp_lookup_rmpentry(1031) == (False, PG_LEVEL_2M)
    assert t.snp_lookup_rmpentry(1024) == (False, PG_LEVEL_2M)
    assert t.snp_lookup_rmpentry(5) == (False, PG_LEVEL_4K)
    r = t.lookup_batch(np.array([1030, 1031, 5], np.uint64))
    assert list(r.assigned) == [1, 0, 0] and list(r.level) == [2, 2, 1]
    assert list(r.asid) == [3, 0, 0] and list(r.gpa) == [9 << 12, 0, 0]


def test_lookup_out_of_range_raises():
    t = small()
    with pytest.raises(RmpError, match="beyond the RMP"):
        t.snp_lookup_rmpentry(2048)
    with pytest.raises(RmpError, match=r"pfns\[2\]"):
        t.lookup_batch(np.array([0, 1, 1 << 60], np.uint64))
    with pytest.raises(InputError):
        t.snp_lookup_rmpentry(-1)
    assert issubclass(RmpError, InputError) and issubclass(RmpError, PykvmmuError)


@given(st.lists(st.integers(0, 4 * 512 - 1), max_size=200), st.integers(0, 2 ** 32))
def test_lookup_batch_matches_reference(pfns, seed):
    rng = np.random.default_rng(seed)
    t = small()
    r = ref.RefRmp(4 * 512)
    for _ in range(20):
        p = int(rng.integers(0, 4 * 512))
        size = int(rng.integers(0, 2))
        p = p & ~511 if size else p
        args = (p, int(rng.integers(0, 4)) << 21, 1, size, 0, int(rng.integers(1, 4)))
        assert int(t.rmpupdate(args[0], gpa=args[1], assigned=1, pagesize=size,
                               asid=args[5])) == r.rmpupdate(*args)
    a = np.array(pfns, np.uint64)
    res = t.lookup_batch(a)
    for i, p in enumerate(pfns):
        assert (res.assigned[i], res.level[i], res.asid[i], res.gpa[i]) == r.lookup(p)


# ------------------------------------------------------------------ page states

@pytest.mark.parametrize("lo,state", [
    (make_lo(), PageState.HYPERVISOR),
    (make_lo(immutable=1), PageState.HV_FIXED),
    (make_lo(assigned=1, immutable=1), PageState.FIRMWARE),
    (make_lo(assigned=1), PageState.RECLAIM),
    (make_lo(assigned=1, lock=1), PageState.INVALID),
    (make_lo(assigned=1, immutable=1, vmsa=1), PageState.CONTEXT),
    (make_lo(assigned=1, immutable=1, gpa=5 | 1 << 36), PageState.METADATA),
    (make_lo(assigned=1, immutable=1, gpa=1 | 2 << 36), PageState.FIRMWARE_IOMMU),
    (make_lo(assigned=1, immutable=1, asid=4), PageState.PRE_GUEST),
    (make_lo(assigned=1, immutable=1, asid=4, validated=1), PageState.PRE_SWAP),
    (make_lo(assigned=1, asid=4), PageState.GUEST_INVALID),
    (make_lo(assigned=1, asid=4, validated=1), PageState.GUEST_VALID),
    (make_lo(asid=4), PageState.INVALID),
])
def test_firmware_page_states(lo, state):
    assert page_state_raw(lo) == state == ref.state_of(lo)
    t = small()
    t.write_raw(3, lo)
    assert t.page_state(3) == state
    assert list(t.page_states(np.array([3], np.uint64))) == [state]


def test_page_state_default_and_effective():
    t = small()
    guest_2m(t)
    assert t.page_state(1 << 30) == PageState.DEFAULT
    assert t.page_state(700) == PageState.GUEST_INVALID           # governed by the 2M entry
    assert t.page_state(700, effective=False) == PageState.RECLAIM  # raw middle entry
    got = t.page_states(np.array([0, 512, 700, 1 << 30], np.uint64))
    assert list(got) == [PageState.HYPERVISOR, PageState.GUEST_INVALID,
                         PageState.GUEST_INVALID, PageState.DEFAULT]


# ------------------------------------------------------------------ RMPUPDATE

@pytest.mark.parametrize("kw", [
    dict(pfn=2048, assigned=1, asid=1),                      # not covered
    dict(pfn=513, assigned=1, pagesize=1, asid=1),           # 2M, not 2M aligned
    dict(pfn=0, assigned=1, asid=0x400),                     # ASID wider than 10 bits
    dict(pfn=0, assigned=0, asid=1),                         # hypervisor-owned needs ASID 0
    dict(pfn=0, assigned=1, asid=1, gpa=0x123),              # GPA not page aligned
    dict(pfn=0, assigned=1, pagesize=1, asid=1, gpa=0x1000),  # 2M GPA not 2M aligned
    dict(pfn=0, assigned=2, asid=1),
])
def test_rmpupdate_fail_input(kw):
    t = small()
    pfn = kw.pop("pfn")
    assert t.rmpupdate(pfn, **kw) == Rc.FAIL_INPUT
    assert not t.buffer.any()


def test_rmpupdate_2m_partial_block_is_fail_input():
    t = small(512 + 100)
    assert t.rmpupdate(512, assigned=1, pagesize=1, asid=1) == Rc.FAIL_INPUT
    assert t.rmpupdate(512, assigned=1, asid=1) == Rc.SUCCESS


def test_rmpupdate_permission_and_inuse():
    t = small()
    t.write_raw(3, make_lo(immutable=1))               # HV_FIXED
    assert t.rmpupdate(3, assigned=1, asid=1) == Rc.FAIL_PERMISSION
    assert t.rmpupdate(0, assigned=1, pagesize=1, asid=1) == Rc.FAIL_PERMISSION   # in its block
    t.set_in_use(600)
    assert t.rmpupdate(600, assigned=1, asid=1) == Rc.FAIL_INUSE
    assert t.rmpupdate(512, assigned=1, pagesize=1, asid=1) == Rc.FAIL_INUSE
    t.set_in_use(600, False)
    assert t.rmpupdate(600, assigned=1, asid=1) == Rc.SUCCESS


def test_rmpupdate_overlap_both_ways_and_rfc_numbering():
    for flags, code in ((0, 4), (RmpFlags.OVERLAP_RC7, 7)):
        t = small(flags=flags)
        guest_2m(t)
        before = t.entries.copy()
        assert t.rmpupdate(600, assigned=1, asid=ASID) == code      # 4K inside a 2M page
        assert t.rmpupdate(512, assigned=0) == code                  # 4K on the 2M entry itself
        assert np.array_equal(before, t.entries)
        guest_4k(t, 1030, 5)
        assert t.rmpupdate(1024, assigned=1, pagesize=1, asid=1) == code   # 2M over a 4K page
        assert t.rmpupdate(1024, assigned=0, pagesize=1) == code


def test_rmpupdate_middle_entries_and_subpage_count():
    t = small()
    guest_2m(t, 512, 0x400)
    lo = t.entries[512:1024, 0]
    assert (lo & np.uint64(1)).all()
    assert not (lo[1:] & ~np.uint64(1)).any()           # middle entries: Assigned only
    assert t.entry(512).subpage_count == 0
    for p in (1025, 1026, 1500):
        guest_4k(t, p, p)
    assert t.entry(1024).subpage_count == 3
    guest_4k(t, 1024, 7)                                # the 2M-aligned entry's own page
    assert t.entry(1024).subpage_count == 3              # is not counted (9 bits: 0..511)
    assert t.rmpupdate(1026, assigned=0) == Rc.SUCCESS
    assert t.entry(1024).subpage_count == 2
    assert t.rmp_make_shared(512, PG_LEVEL_2M) == 0
    assert not (t.entries[513:1024, 0]).any()


def test_rmpupdate_middle_full_flag():
    t = small(flags=RmpFlags.MIDDLE_FULL)
    guest_2m(t, 512, 0x400)
    m = t.entry(700)
    assert (m.assigned, m.pagesize, m.asid, m.gpa) == (1, 1, ASID, 0x400 + 700 - 512)


def test_rmpupdate_validated_and_permissions():
    t = small()
    guest_4k(t, 3, 0x10)
    e = t.entry(3)
    assert e.vmpl == (0x1F, 0, 0, 0) and not e.validated
    assert t.pvalidate(3, asid=ASID, gfn=0x10).rc == Rc.SUCCESS
    guest_4k(t, 3, 0x10)                                 # same ownership: Validated stays
    assert t.entry(3).validated
    guest_4k(t, 3, 0x11)                                 # remap: Validated cleared
    assert not t.entry(3).validated
    t2 = small(flags=RmpFlags.ALWAYS_RESET)
    guest_4k(t2, 3, 0x10)
    t2.pvalidate(3, asid=ASID, gfn=0x10)
    guest_4k(t2, 3, 0x10)
    assert not t2.entry(3).validated
    assert t.rmp_make_shared(3, PG_LEVEL_4K) == 0
    assert t.entry(3) == (0, 0)


def test_kernel_helpers_errnos():
    t = small()
    assert t.rmp_make_private(513, 0, PG_LEVEL_2M, ASID) == -14     # adjust_direct_map
    assert t.rmp_make_private(0, 0, PG_LEVEL_1G, ASID) == -14
    assert t.rmp_make_private(512, 0x200000, PG_LEVEL_2M, ASID) == 0
    assert t.rmp_make_private(600, 0, PG_LEVEL_4K, ASID) == -14 and t.last_rc == Rc.FAIL_OVERLAP


def test_rmpupdate_batch_assigns_and_checks_inputs_first():
    t = small()
    pfns = np.array([0, 512, 1024], np.uint64)
    assert t.rmpupdate_batch(pfns, pfns << np.uint64(12), pagesize=1, asid=2) == 3
    assert t.count_assigned(0, 2048) == 1536
    with pytest.raises(RmpError, match=r"pfns\[1\]=0x201: .*2M-aligned pfn.*nothing was updated"):
        t.rmpupdate_batch(np.array([1536, 513], np.uint64), pagesize=1, asid=2)
    assert t.snp_lookup_rmpentry(1536) == (False, 1)      # element 0 was not applied


# ------------------------------------------------------------------ PSMASH

def test_psmash():
    t = small()
    guest_2m(t, 512, 0x400)
    assert t.pvalidate(512, asid=ASID, gfn=0x400, size=1).rc == Rc.SUCCESS
    t.rmpadjust(512, asid=ASID, gfn=0x400, size=1, target_vmpl=2, perms=1)
    assert t.psmash(513) == Rc.FAIL_INPUT
    t.set_in_use(512)
    assert t.psmash(512) == Rc.FAIL_INUSE
    t.set_in_use(512, False)
    assert t.psmash(512) == Rc.SUCCESS
    for i in (0, 1, 511):
        e = t.entry(512 + i)
        assert (e.assigned, e.pagesize, e.asid, e.gpa, e.validated) == (1, 0, ASID, 0x400 + i, 1)
        assert e.vmpl == (0x1F, 0, 1, 0)
    assert t.entry(512).subpage_count == 511
    assert t.snp_lookup_rmpentry(700) == (True, PG_LEVEL_4K)
    assert t.psmash(512) == Rc.FAIL_BADADDR              # already 4K (7 observed)
    assert t.psmash(0) == Rc.FAIL_BADADDR
    assert t.psmash(1 << 20) == Rc.FAIL_INPUT


# ------------------------------------------------------------------ PVALIDATE

def test_pvalidate_rules():
    t = small()
    guest_2m(t, 512, 0x400)
    guest_4k(t, 5, 0x5)
    r = t.pvalidate(513, asid=ASID, gfn=0x401)           # 4K request on a 2M page
    assert r.rc == Rc.NPF and r.fault == "NPF" and r.exitinfo & (1 << 35) and r.exitinfo & (1 << 31)
    assert t.pvalidate(0, asid=ASID, gfn=0, size=1).rc == Rc.NPF      # not assigned
    guest_4k(t, 1024, 0x800)
    assert t.pvalidate(1024, asid=ASID, gfn=0x800, size=1).rc == Rc.FAIL_SIZEMISMATCH
    assert t.pvalidate(5, asid=ASID, gfn=0x5, size=1).rc == Rc.FAIL_INPUT   # unaligned 2M
    assert t.pvalidate(5, asid=ASID + 1, gfn=0x5).rc == Rc.NPF              # ASID
    assert t.pvalidate(5, asid=ASID, gfn=0x6).rc == Rc.NPF                  # reverse map
    assert t.pvalidate(5, asid=ASID, gfn=0x5, vmpl=1).rc == Rc.FAIL_PERMISSION
    assert t.pvalidate(5, asid=ASID, gfn=0x5).rc == Rc.SUCCESS
    assert t.pvalidate(5, asid=ASID, gfn=0x5).rc == Rc.NOUPDATE
    assert t.pvalidate(5, asid=ASID, gfn=0x5, validate=False).rc == Rc.SUCCESS
    assert t.pvalidate(5, asid=ASID, gfn=0x5, size=2).rc == Rc.FAIL_INPUT
    gp = small(flags=RmpFlags.PVALIDATE_VMPL_GP)
    guest_4k(gp, 5, 5)
    r = gp.pvalidate(5, asid=ASID, gfn=5, vmpl=2)
    assert r.rc == Rc.GP and r.fault == "#GP"


def test_pvalidate_immutable_page_npfs():
    t = small()
    assert t.rmpupdate(5, gpa=0x5000, assigned=1, immutable=1, asid=ASID) == Rc.SUCCESS
    assert t.page_state(5) == PageState.PRE_GUEST
    assert t.pvalidate(5, asid=ASID, gfn=5).rc == Rc.NPF


# ------------------------------------------------------------------ RMPADJUST

def test_rmpadjust_rules():
    t = small()
    guest_4k(t, 5, 0x5)
    kw = dict(asid=ASID, gfn=0x5)
    assert t.rmpadjust(5, target_vmpl=0, perms=1, **kw).rc == Rc.FAIL_PERMISSION
    r = t.rmpadjust(5, target_vmpl=1, perms=1, **kw)
    assert r.rc == Rc.VC and r.exitinfo == 0x404                     # not validated
    t.pvalidate(5, **kw)
    assert t.rmpadjust(5, target_vmpl=1, perms=0x20, **kw).rc == Rc.FAIL_INPUT
    assert t.rmpadjust(5, target_vmpl=1, perms=0x3, vmsa=True, **kw).rc == Rc.SUCCESS
    e = t.entry(5)
    assert e.vmpl == (0x1F, 0x3, 0, 0) and e.vmsa == 1
    # VMPL1 may grant VMPL2 only a subset of its own mask; its VMSA request is ignored.
    assert t.rmpadjust(5, target_vmpl=2, perms=0x7, vmpl=1, **kw).rc == Rc.FAIL_PERMISSION
    assert t.rmpadjust(5, target_vmpl=2, perms=0x1, vmpl=1, vmsa=False, **kw).rc == Rc.SUCCESS
    assert t.entry(5).vmsa == 1 and t.entry(5).vmpl[2] == 1
    assert t.rmpadjust(5, target_vmpl=1, perms=1, vmpl=1, **kw).rc == Rc.FAIL_PERMISSION
    guest_4k(t, 1024, 0x800)
    t.pvalidate(1024, asid=ASID, gfn=0x800)
    assert t.rmpadjust(1024, asid=ASID, gfn=0x800, size=1, target_vmpl=1,
                       perms=1).rc == Rc.FAIL_SIZEMISMATCH


# ------------------------------------------------------------------ host checks

def test_host_check():
    t = small()
    guest_4k(t, 600, 1)
    r = t.host_check(600)
    assert r.check == Check.HV_OWNED and r.fault == "#PF" and r.error_code >> 31 & 1
    assert t.host_check(601).check == Check.OK
    assert t.host_check(601, PG_LEVEL_2M).check == Check.HV_OWNED   # all 512 entries rule
    assert t.host_check(1000, PG_LEVEL_1G).check == Check.HV_OWNED  # 1G checked as 2M
    assert t.host_check(1024, PG_LEVEL_2M).check == Check.OK
    assert t.host_check(1 << 30, PG_LEVEL_2M).check == Check.OK     # beyond RMP_END
    t.write_raw(1030, make_lo(immutable=1))                          # HV_FIXED
    assert t.host_check(1030).check == Check.OK                      # APM: don't care
    ti = small(flags=RmpFlags.HOST_IMMUTABLE)
    ti.write_raw(1030, make_lo(immutable=1))
    assert ti.host_check(1030).check == Check.MUTABLE
    assert ti.host_check(1031, PG_LEVEL_2M).check == Check.MUTABLE
    got = t.host_check_batch(np.array([600, 601, 1024], np.uint64), PG_LEVEL_4K)
    assert list(got) == [Check.HV_OWNED, Check.OK, Check.OK]
    with pytest.raises(RmpError, match="level"):
        t.host_check(0, 4)


# ------------------------------------------------------------------ guest checks

def test_guest_checks_table():
    t = small()
    guest_4k(t, 5, 0x5)
    g = dict(asid=ASID)
    assert t.guest_check(5, 0x5, **g).check == Check.VALIDATED
    assert t.guest_check(5, 0x5, **g).fault == "#VC"
    t.pvalidate(5, asid=ASID, gfn=5)
    assert t.guest_check(5, 0x5, **g) == (Check.OK, None, 0)
    assert t.guest_check(5, 0x5, asid=ASID + 1).check == Check.GUEST_OWNED
    assert t.guest_check(5, 0x6, **g).check == Check.REVERSE_MAP
    r = t.guest_check(5, 0x5, npt_level=PG_LEVEL_2M, **g)
    assert r.check == Check.PAGE_SIZE and r.error_code >> 35 & 1
    assert t.guest_check(1 << 30, 0, **g).check == Check.COVERED
    r = t.guest_check(5, 0x5, vmpl=1, **g)
    assert r.check == Check.VMPL and r.fault == "NPF" and r.error_code >> 36 & 1
    # Shared (C=0) reads are not checked; shared writes need a hypervisor-owned page.
    assert t.guest_check(5, 0x5, c_bit=False, **g).check == Check.OK
    assert t.guest_check(5, 0x5, c_bit=False, kind="write", **g).check == Check.HV_OWNED
    assert t.guest_check(6, 0x6, c_bit=False, kind="write", **g).check == Check.OK
    # Instruction fetches and page-table accesses are always C=1.
    assert t.guest_check(6, 0x6, c_bit=False, kind="fetch", **g).check == Check.GUEST_OWNED
    assert t.guest_check(5, 0x5, c_bit=False, kind="pt_read", **g).check == Check.OK
    # Non-SNP guests: only the hypervisor-owned check, for writes and page-table accesses.
    assert t.guest_check(5, 0x5, snp_active=False, kind="write", **g).check == Check.HV_OWNED
    assert t.guest_check(5, 0x5, snp_active=False, kind="fetch", **g).check == Check.OK


def test_guest_check_priorities_and_vmpl_masks():
    t = small()
    guest_4k(t, 5, 5)
    # Page size + unvalidated: NPF, not #VC (VMPL lowest, Validated next).
    r = t.guest_check(5, 5, asid=ASID, npt_level=2)
    assert r.check == Check.PAGE_SIZE and r.fault == "NPF"
    t.pvalidate(5, asid=ASID, gfn=5)
    t.rmpadjust(5, asid=ASID, gfn=5, target_vmpl=1, perms=0x2)   # write without read
    assert t.guest_check(5, 5, asid=ASID, vmpl=1, kind="write").check == Check.VMPL
    t.rmpadjust(5, asid=ASID, gfn=5, target_vmpl=2, perms=0x4)   # X-user only
    assert t.guest_check(5, 5, asid=ASID, vmpl=2, kind="fetch", user=True).check == Check.OK
    assert t.guest_check(5, 5, asid=ASID, vmpl=2, kind="fetch").check == Check.VMPL
    got = t.guest_check_batch(np.array([5, 6], np.uint64), np.array([5, 6], np.uint64),
                              asid=ASID)
    assert list(got) == [Check.OK, Check.GUEST_OWNED]


def test_guest_check_2m_page():
    t = small()
    guest_2m(t, 512, 0x400)
    t.pvalidate(512, asid=ASID, gfn=0x400, size=1)
    assert t.guest_check(700, 0x400 + 188, asid=ASID, npt_level=2).check == Check.OK
    assert t.guest_check(700, 0x400 + 188, asid=ASID, npt_level=3).check == Check.OK
    assert t.guest_check(700, 0x400 + 188, asid=ASID).check == Check.PAGE_SIZE


# ------------------------------------------------------------------ fault handlers

def test_user_rmp_fault_handler():
    t = small()
    guest_2m(t, 512, 0x400)
    guest_4k(t, 1030, 1)
    f = handle_user_rmp_page_fault
    assert f(t, pte_present=False, pte_pfn=0, level=1, address=0).action == "UNMAP"
    r = f(t, pte_present=True, pte_pfn=512, level=2, address=0x7000_0000_0000 + 3 * 4096)
    assert (r.action, r.pfn, r.ret) == ("SIGBUS", 515, 1)         # a middle entry: assigned
    r = f(t, pte_present=True, pte_pfn=1024, level=2, address=0x1000)
    assert (r.action, r.pfn, r.rmp_level, r.ret) == ("SPLIT", 1025, 1, 0)
    assert f(t, pte_present=True, pte_pfn=1031, level=1, address=0).action == "RETRY"
    assert f(t, pte_present=True, pte_pfn=1030, level=1, address=0).action == "SIGBUS"
    assert f(t, pte_present=True, pte_pfn=1 << 30, level=1, address=0).action == "SIGBUS"
    r = ref.RefRmp(4 * 512)
    r.rmpupdate(512, 0x400 << 12, 1, 1, 0, ASID)
    assert r.user_pf(True, 512, 2, 3 * 4096)[:2] == ("SIGBUS", 515)


def test_npf_rmp_handler():
    t = small()
    guest_2m(t, 512, 0x400)
    guest_4k(t, 5, 5)
    h = sev_handle_rmp_fault
    assert h(t, 0x5000, pfn=5).action == "spurious"
    assert h(t, 0x401000, pfn=513, is_private=False).action == "not-private"
    assert h(t, 0x401000, pfn=None).action == "no-backing-page"
    assert h(t, 0x6000, pfn=6).action == "no-assigned-entry"
    t.set_in_use(512)
    o = h(t, 0x401000, pfn=513)
    assert o.action == "psmash-failed" and o.psmash_rc == Rc.FAIL_INUSE
    t.set_in_use(512, False)
    o = h(t, 0x401000, pfn=513)
    assert (o.action, o.rmp_level, o.psmash_rc, o.zap) == ("psmash", 2, 0, (0x401, 0x401 + 512))
    assert t.snp_lookup_rmpentry(513) == (True, 1)
    assert h(t, 0x401000, pfn=513).action == "spurious"


def test_max_mapping_level():
    t = small()
    guest_2m(t, 512, 0x400)
    guest_4k(t, 5, 5)
    assert sev_private_max_mapping_level(t, 600) == PG_LEVEL_2M
    assert sev_private_max_mapping_level(t, 5) == PG_LEVEL_4K
    assert sev_private_max_mapping_level(t, 6) == PG_LEVEL_4K      # unassigned
    assert sev_private_max_mapping_level(t, 1 << 30) == PG_LEVEL_4K  # lookup fails
    assert sev_private_max_mapping_level(t, 600, snp=False) == 0
    assert kvm_max_private_mapping_level(3, 18, 0) == 3
    assert kvm_max_private_mapping_level(3, 9, 0) == 2
    assert kvm_max_private_mapping_level(3, 18, 2) == 2
    assert kvm_max_private_mapping_level(3, 0, 2) == 1
    assert ref.RefRmp(1024).max_mapping_level(5) == 1


# ------------------------------------------------------------------ segmented layout

def test_segmented_layout_and_lookup_formula():
    t = RmpTable.create(3 * GiB + 1, segmented=True, seg_shift=30, rmp_base=0x100000)
    rst = [int(v) for v in t.buffer[BOOKKEEPING:BOOKKEEPING + 4096].view("<u8")]
    assert [v & 0xFFFFF for v in rst[:5]] == [1, 1, 1, 1, 0]       # mapped GiB per segment
    assert all(v & ((1 << 20) - 1) == (v & 0xFFFFF) for v in rst)   # base bits 51:20 only
    assert (rst[0] & ~0xFFFFF) == 0x100000 + MiB                      # 1 MiB-aligned segment
    assert t.size == MiB + 4 * 4 * MiB
    for pfn in (0, 1, 0x3FFFF, 0x40000, 0xC0000, 0xC0001, 0x100000):
        off = ref.segmented_entry_offset(rst, 30, 0x100000, pfn)
        assert t.covered(pfn) == (off is not None)
        if off is not None:
            t.write_raw(pfn, pfn + 1, 0)
            assert int.from_bytes(t.buffer[off:off + 8].tobytes(), "little") == pfn + 1
    assert t.rmpupdate(0x40200, gpa=0x200000, assigned=1, pagesize=1, asid=3) == Rc.SUCCESS
    assert t.snp_lookup_rmpentry(0x40201) == (True, 2)
    assert t.psmash(0x40200) == Rc.SUCCESS
    r = t.lookup_batch(np.array([0x40201, 0x40200], np.uint64))
    assert list(r.assigned) == [1, 1] and list(r.level) == [1, 1]
    assert t.fields(np.array([0x40205], np.uint64))["gpa"][0] == 0x205
    again = RmpTable.open(t.buffer, segmented=True, seg_shift=30, rmp_base=0x100000)
    assert again.entry(0x40205) == t.entry(0x40205)
    with pytest.raises(RmpError, match="outside the buffer"):
        RmpTable.open(t.buffer, segmented=True, seg_shift=30, rmp_base=0x200000)
    with pytest.raises(RmpError, match="entries"):
        t.entries


# ------------------------------------------------------------------ open / save

def test_save_open_roundtrip(tmp_path):
    t = RmpTable.create(64 * MiB)
    guest_2m(t, 512, 0x400)
    path = tmp_path / "rmp.bin"
    t.save(path)
    assert path.stat().st_size == HEADER_SIZE + t.size
    u = RmpTable.open(path)
    assert u.entry(600) == t.entry(600) and u.snp_lookup_rmpentry(600) == (True, 2)
    assert u.psmash(512) == Rc.SUCCESS
    del u
    ro = RmpTable.open(path, mode="r")
    assert ro.snp_lookup_rmpentry(600) == (True, 1)
    with pytest.raises(RmpError, match="read-only"):
        ro.rmpupdate(0, assigned=1, asid=1)


def test_bad_buffers():
    with pytest.raises(RmpError, match="multiple of 16"):
        RmpTable(np.zeros(BOOKKEEPING + 8, np.uint8))
    with pytest.raises(RmpError, match="bookkeeping"):
        RmpTable(np.zeros(100, np.uint8))
    with pytest.raises(RmpError, match="dtype"):
        RmpTable(np.zeros(BOOKKEEPING, np.int32))
    with pytest.raises(RmpError, match="flags"):
        RmpTable(np.zeros(BOOKKEEPING, np.uint8), flags=64)
    with pytest.raises(RmpError, match="cannot open"):
        RmpTable.open("/nonexistent/rmp.bin")
    t = RmpTable(np.zeros(BOOKKEEPING + 32, np.uint64).view(np.uint8)[:BOOKKEEPING + 32])
    assert t.nr_pfns == 2


def test_fact_sheet_constants():
    import pykvmmu.rmp as R
    assert (R.MSR_AMD64_RMP_BASE, R.MSR_AMD64_RMP_END, R.MSR_AMD64_RMP_CFG) == (
        0xC0010132, 0xC0010133, 0xC0010136)
    assert R.SYSCFG_SNP_EN == 1 << 24 and R.SYSCFG_MEM_ENCRYPT == 1 << 23
    assert R.X86_PF_RMP == 1 << 31 and R.FAULT_FLAG_PAGE_SPLIT == 1 << 12
    assert (R.RMP_PF_SPLIT, R.RMP_PF_RETRY, R.RMP_PF_UNMAP) == (0, 1, 2)
    assert R.rmp_cfg_decode(1 | 36 << 8) == (True, 36)            # 64 GiB segments
    assert R.rst_entry(0x4010_0000, 64) == 0x4010_0000 | 64
    with pytest.raises(RmpError, match="1 MiB"):
        R.rst_entry(0x1000, 1)
    assert R.BOOKKEEPING == 0x4000 and R.NONSEG_SHIFT == 52


def test_check_codes_end_at_vmpl():
    """The C check codes are Check's, 0..VMPL with VMPL the highest, and
    kvmmu_rmp_guest_check_read_word takes exactly those (rmp.c's bound on VMPL)."""
    from pykvmmu._core import lib
    assert {c.name: int(c) for c in Check} == {c.name: getattr(lib, f"KVMMU_RMP_CHK_{c.name}")
                                               for c in Check}
    assert max(Check) == Check.VMPL and sorted(Check) == list(range(len(Check)))
    assert all(lib.kvmmu_rmp_guest_check_read_word(c) >= 0 for c in Check)
    assert lib.kvmmu_rmp_guest_check_read_word(len(Check)) == -1
    assert lib.kvmmu_rmp_guest_check_read_word(0xFFFFFFFF) == -1
