"""Trust in the RMP API: inputs checked before anything changes, exact types (real bools,
levels that are ints), out= arrays that overlap nothing, partial batches reported; and a
property test: random operation sequences with invalid arguments mixed in leave the table
byte-for-byte unchanged after every refused call."""
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import pykvmmu.rmp as R
from pykvmmu.errors import ArrayError, PykvmmuError
from pykvmmu.rmp import (BOOKKEEPING, FIELDS_DTYPE, Rc, RmpBatchError, RmpError, RmpFlags,
                         RmpTable)

NPFN = 3 * 512 + 37


def small(npfn=NPFN, flags=0):
    return RmpTable(np.zeros(BOOKKEEPING + 16 * npfn, np.uint8), flags=flags)


# ------------------------------------------------------------------ half-applied failures

def test_rmpupdate_batch_checks_every_pfn_first():
    t = small()
    before = t.buffer.copy()
    with pytest.raises(RmpError, match=r"pfns\[1\]=0x100000: pfn 0x100000 is beyond the RMP "
                                       r"\(covers 0x625 pages\).*nothing was updated"):
        t.rmpupdate_batch(np.array([0x30, 1 << 20], np.uint64), assigned=1, asid=1)
    assert np.array_equal(t.buffer, before)


@pytest.mark.parametrize("kw, pfns, gpas, rule", [
    (dict(asid=0x400), [0, 1], None, r"pfns\[0\].*asid=0x400: at most 0x3ff"),
    (dict(assigned=0, asid=3), [0, 1], None, r"asid=0x3.*0 when assigned=0"),
    (dict(asid=1), [0, 1], [0x1000, 0x2001], r"pfns\[1\]=0x1: gpa=0x2001: 4K aligned"),
    (dict(asid=1), [0, 1], [0x1000, 1 << 51], r"pfns\[1\].*gpa=0x8000000000000: .*below 2\^51"),
    (dict(asid=1, pagesize=1), [0, 512], [0, 0x1000], r"pfns\[1\]=0x200: gpa=0x1000: 4K aligned "
                                                       r"\(2M aligned"),
    (dict(asid=1, pagesize=1), [0, 513], None, r"pfns\[1\]=0x201: .*2M-aligned pfn"),
    (dict(asid=1, pagesize=1), [0, 1536], None, r"pfns\[1\]=0x600: .*not fully covered"),
    (dict(asid=1, immutable=2), [0], None, r"pfns\[0\]=0x0: .*immutable=2: each must be 0 or 1"),
])
def test_rmpupdate_batch_input_rules_change_nothing(kw, pfns, gpas, rule):
    t = small()
    before = t.buffer.copy()
    g = None if gpas is None else np.array(gpas, np.uint64)
    with pytest.raises(RmpError, match=rule):
        t.rmpupdate_batch(np.array(pfns, np.uint64), g, **kw)
    assert np.array_equal(t.buffer, before)
    # the scalar instruction agrees: each of these inputs is FAIL_INPUT on its own
    bad = [i for i, p in enumerate(pfns)
           if t.rmpupdate(p, gpa=0 if g is None else int(g[i]), assigned=kw.get("assigned", 1),
                          pagesize=kw.get("pagesize", 0), immutable=kw.get("immutable", 0),
                          asid=kw.get("asid", 0)) == Rc.FAIL_INPUT]
    assert bad


def test_rmpupdate_batch_reports_how_far_it_got():
    t = small()
    t.write_raw(5, 1 << 2)                              # Immutable: RMPUPDATE FAIL_PERMISSION
    with pytest.raises(RmpBatchError, match=r"pfns\[2\]=0x5: RMPUPDATE failed with "
                                            r"FAIL_PERMISSION.*2 earlier updates were done") as ei:
        t.rmpupdate_batch(np.array([3, 4, 5, 6], np.uint64), assigned=1, asid=9)
    assert ei.value.done == 2 and ei.value.rc == Rc.FAIL_PERMISSION
    assert [t.entry(p).asid for p in (3, 4, 5, 6)] == [9, 9, 0, 0]


# ------------------------------------------------------------------ silent accepts

def _calls(t):
    one = np.zeros(1, np.uint64)
    return [
        (lambda: t.set_in_use(3, 1), "in_use=1"),
        (lambda: t.page_state(3, effective=0), "effective=0"),
        (lambda: t.page_states(one, effective=None), "effective=None"),
        (lambda: t.lookup_batch(one, with_owner=1), "with_owner=1"),
        (lambda: t.lookup_batch(one, with_owner=False, gpa=np.zeros(1, np.uint64)), "gpa="),
        (lambda: t.host_check(3, user=1), "user=1"),
        (lambda: t.host_check(3, True), "level=True"),
        (lambda: t.host_check(3, 2.0), "level=2.0"),
        (lambda: t.host_check(3, 4), "level=4"),
        (lambda: t.host_check_batch(one, 0), "level=0"),
        (lambda: t.guest_check(3, 3, asid=1, c_bit=1), "c_bit=1"),
        (lambda: t.guest_check(3, 3, asid=1, snp_active="yes"), "snp_active='yes'"),
        (lambda: t.guest_check(3, 3, asid=1, kind=True), "kind=True"),
        (lambda: t.guest_check(3, 3, asid=1, kind=1.0), "kind=1.0"),
        (lambda: t.guest_check(3, 3, asid=1, npt_level=True), "npt_level=True"),
        (lambda: t.guest_check(3, 3, asid=1, vmpl=4), "vmpl=4"),
        (lambda: t.rmp_make_private(3, 0, 1, 5, immutable=0), "immutable=0"),
        (lambda: t.rmp_make_private(3, 0, True, 5), "level=True"),
        (lambda: t.rmp_make_private(3, 0, 1.0, 5), "level=1.0"),
        (lambda: t.rmp_make_private(3, -1, 1, 5), "gpa=-1"),
        (lambda: t.rmp_make_private(3, 0, 1, 1 << 32), "asid=0x100000000"),
        (lambda: t.rmpupdate(3, assigned=256), "assigned=256"),
        (lambda: t.rmpupdate(3, asid=-1), "asid=-1"),
        (lambda: t.rmpupdate(1.5), "pfn=1.5"),
        (lambda: t.rmpupdate_batch(one, assigned=256), "assigned=256"),
        (lambda: t.pvalidate(3, asid=1, gfn=3, validate=1 << 32), "validate=0x100000000"),
        (lambda: t.rmpadjust(3, asid=1, gfn=3, target_vmpl=1, perms=1, vmsa=None), "vmsa=None"),
        (lambda: t.count_assigned(-1, 1), "start=-1"),
        (lambda: t.write_raw(3, 1 << 64), "lo=0x10000000000000000"),
        (lambda: R.handle_user_rmp_page_fault(t, pte_present=1, pte_pfn=3, level=1, address=0),
         "pte_present=1"),
        (lambda: R.handle_user_rmp_page_fault(t, pte_present=False, pte_pfn=3, level=9,
                                              address=0), "level=9"),
        (lambda: R.handle_user_rmp_page_fault(None, pte_present=True, pte_pfn=3, level=1,
                                              address=0), "table: expected an RmpTable"),
        (lambda: R.sev_handle_rmp_fault(t, 0, pfn=3, is_private=1), "is_private=1"),
        (lambda: R.sev_handle_rmp_fault(t, 0, pfn=-3), "pfn=-3"),
        (lambda: R.sev_private_max_mapping_level(t, 3, snp=1), "snp=1"),
        (lambda: R.kvm_max_private_mapping_level(2, 9, True), "hook_level=True"),
        (lambda: R.kvm_max_private_mapping_level(2, 9, 4), "hook_level=4"),
        (lambda: R.kvm_max_private_mapping_level(True, 9), "max_level=True"),
        (lambda: RmpTable(np.zeros(BOOKKEEPING, np.uint8), segmented=1), "segmented=1"),
        (lambda: RmpTable.create(1 << 20, segmented="no"), "segmented='no'"),
        (lambda: RmpTable.create(1 << 20, seg_shift="x"), "seg_shift='x'"),
        (lambda: RmpTable.create_file("/nonexistent/x", 1 << 20, flags=1 << 40), "flags="),
        (lambda: t.lookup_batch(one, threads=True), "threads=True"),
        (lambda: t.advise(3), "pattern=3"),
        (lambda: R.decode_dump(b"PFN 0x1"), "text: expected a str"),
    ]


def test_every_bad_argument_is_named():
    t = small()
    before = t.buffer.copy()
    for call, named in _calls(t):
        with pytest.raises(PykvmmuError) as ei:
            call()
        assert named in str(ei.value), (named, str(ei.value))
        assert np.array_equal(t.buffer, before), named


def test_count_assigned_is_bounded_by_the_table():
    t = small()
    t.rmpupdate_batch(np.array([0, 512], np.uint64), assigned=1, pagesize=1, asid=3)
    assert t.count_assigned(0, (1 << 64) - 1) == 1024       # returns at once: clamped
    assert t.count_assigned((1 << 64) - 1, (1 << 64) - 1) == 0
    assert t.count_assigned(511, 2) == 2


# ------------------------------------------------------------------ out= overlap

def test_outputs_may_not_overlap_inputs_or_the_table():
    t = small()
    t.rmpupdate_batch(np.array([0], np.uint64), assigned=1, pagesize=1, asid=3)
    before = t.buffer.copy()
    pf = np.zeros(64, np.uint64)
    pf[:8] = [0, 1, 2, 3, 511, 512, 1000, 5]
    pfns = pf[:8]
    mem = np.zeros(8 * 48, np.uint8)
    with pytest.raises(ArrayError, match="out: shares memory with pfns"):
        t.fields(pfns, out=pf.view(np.uint8)[8:8 + 8 * 40].view(FIELDS_DTYPE))
    with pytest.raises(ArrayError, match="gpa: shares memory with pfns"):
        t.lookup_batch(pfns, gpa=pf[4:12])
    with pytest.raises(ArrayError, match="gpa: shares memory with pfns"):
        t.lookup_batch(pfns, gpa=pfns)                       # exact aliasing is refused too
    with pytest.raises(ArrayError, match="assigned: shares memory with level"):
        t.lookup_batch(pfns, assigned=mem[:8], level=mem[4:12])
    with pytest.raises(ArrayError, match="out: shares memory with the RMP table buffer"):
        t.page_states(pfns, out=t.buffer[BOOKKEEPING:BOOKKEEPING + 8])
    with pytest.raises(ArrayError, match="out: shares memory with the RMP table buffer"):
        t.host_check_batch(pfns, out=t.buffer[BOOKKEEPING + 16:BOOKKEEPING + 24])
    with pytest.raises(ArrayError, match="out: shares memory with gfns"):
        g = np.zeros(8, np.uint64)
        t.guest_check_batch(pfns, g, asid=3, out=g.view(np.uint8)[:8])
    with pytest.raises(ArrayError, match="pfns: shares memory with the RMP table buffer"):
        t.rmpupdate_batch(t.buffer[BOOKKEEPING:BOOKKEEPING + 16].view(np.uint64), asid=1)
    lo = np.arange(10, dtype=np.uint64)
    with pytest.raises(ArrayError, match="out: shares memory with lo"):
        R.decode(lo[:2], lo[2:4], out=lo.view(np.uint8)[:80].view(FIELDS_DTYPE))
    assert np.array_equal(t.buffer, before)
    r = t.lookup_batch(pfns, assigned=mem[:8], level=mem[8:16])   # disjoint: fine
    assert list(r.assigned) == [1, 1, 1, 1, 1, 0, 0, 1]


# ------------------------------------------------------------------ the property test

BAD_INT = st.sampled_from([-1, 1 << 64, 1.5, "1", None, np.float64(2.0)])
BAD_BOOL = st.sampled_from([1, 0, None, "yes", 2.0])
PFNS = st.sampled_from([0, 1, 2, 300, 511, 512, 513, 1023, 1024, 1536, NPFN - 1, NPFN,
                        1 << 20, (1 << 64) - 1])


def maybe(good, bad=BAD_INT):
    return st.one_of(good, good, good, bad)


GOOD_BOOL = st.sampled_from([True, False, np.bool_(True)])


class TrustMachine(RuleBasedStateMachine):
    """Every call either succeeds or raises a PykvmmuError; a refused call (or a failed
    instruction) leaves every byte of the table unchanged; a partial batch applied
    exactly the instructions it reports."""

    @initialize(flags=st.sampled_from([0, int(RmpFlags.MIDDLE_FULL), int(RmpFlags.ALWAYS_RESET)]),
                index=st.booleans())
    def setup(self, flags, index):
        self.t = small(flags=flags)
        if index:
            self.t.enable_level_index()
        self.refused = 0

    def run(self, fn):
        before = self.t.buffer.copy()
        try:
            r = fn()
        except RmpBatchError as e:
            # replay the first `done` updates one at a time on a copy of the old table
            return ("partial", e, before)
        except PykvmmuError:
            self.refused += 1
            assert np.array_equal(self.t.buffer, before), "a refused call changed the table"
            return None
        if isinstance(r, Rc) and r != Rc.SUCCESS:
            assert np.array_equal(self.t.buffer, before), f"{r.name} changed the table"
        if isinstance(r, R.InsnResult) and r.rc != Rc.SUCCESS:
            assert np.array_equal(self.t.buffer, before), f"{r.rc.name} changed the table"
        return r

    @rule(pfn=maybe(PFNS), gpa=maybe(st.sampled_from([0, 0x1000, 0x200000, 0x400000, 0x123])),
          assigned=maybe(st.sampled_from([0, 1, True, 2])), pagesize=maybe(st.sampled_from([0, 1])),
          immutable=maybe(st.sampled_from([0, 1, False])),
          asid=maybe(st.sampled_from([0, 1, 5, 0x3FF, 0x400])))
    def rmpupdate(self, pfn, gpa, assigned, pagesize, immutable, asid):
        self.run(lambda: self.t.rmpupdate(pfn, gpa=gpa, assigned=assigned, pagesize=pagesize,
                                          immutable=immutable, asid=asid))

    @rule(pfns=st.lists(PFNS, min_size=0, max_size=6),
          dtype=st.sampled_from([np.uint64, np.uint64, np.uint64, np.int64, np.uint32]),
          with_gpa=st.booleans(), pagesize=maybe(st.sampled_from([0, 1])),
          assigned=maybe(st.sampled_from([0, 1])), asid=maybe(st.sampled_from([0, 1, 5, 0x400])),
          alias=st.booleans())
    def rmpupdate_batch(self, pfns, dtype, with_gpa, pagesize, assigned, asid, alias):
        if dtype is np.uint64 and any(p >= 1 << 64 for p in pfns):
            return
        p = np.array(pfns, dtype=np.uint64).astype(dtype)
        g = (p.astype(np.uint64) << np.uint64(12)) if with_gpa and dtype is np.uint64 else None
        if alias and len(pfns) and dtype is np.uint64:
            view = self.t.buffer[BOOKKEEPING:BOOKKEEPING + 8 * len(pfns)].view(np.uint64)
            p = view                                   # inputs inside the table: refused
        r = self.run(lambda: self.t.rmpupdate_batch(p, g, assigned=assigned, pagesize=pagesize,
                                                    asid=asid))
        if isinstance(r, tuple) and r[0] == "partial":
            _, e, before = r
            replay = RmpTable(before, flags=int(self.t.flags))
            for i in range(e.done):
                rc = replay.rmpupdate(int(p[i]), gpa=0 if g is None else int(g[i]),
                                      assigned=assigned, pagesize=pagesize, asid=asid)
                assert rc == Rc.SUCCESS
            assert replay.rmpupdate(int(p[e.done]), gpa=0 if g is None else int(g[e.done]),
                                    assigned=assigned, pagesize=pagesize, asid=asid) == e.rc
            assert np.array_equal(replay.buffer, self.t.buffer)

    @rule(head=st.sampled_from([0, 512, 1024]), asid=st.sampled_from([1, 5]))
    def assign_2m(self, head, asid):
        """A valid 2M assignment, so that PSMASH, PVALIDATE and the level index get work."""
        self.run(lambda: self.t.rmpupdate(head, gpa=head << 12, assigned=1, pagesize=1,
                                          asid=asid))

    @rule(pfn=maybe(PFNS))
    def psmash(self, pfn):
        self.run(lambda: self.t.psmash(pfn))

    @rule(pfn=maybe(PFNS), asid=maybe(st.sampled_from([0, 1, 5])),
          gfn=maybe(st.sampled_from([0, 1, 0x200, 0x400, 0x401])),
          size=maybe(st.sampled_from([0, 1, 2])), validate=maybe(GOOD_BOOL, BAD_BOOL),
          vmpl=maybe(st.sampled_from([0, 1, 4])))
    def pvalidate(self, pfn, asid, gfn, size, validate, vmpl):
        self.run(lambda: self.t.pvalidate(pfn, asid=asid, gfn=gfn, size=size, validate=validate,
                                          vmpl=vmpl))

    @rule(pfn=maybe(PFNS), asid=maybe(st.sampled_from([1, 5])),
          gfn=maybe(st.sampled_from([0, 0x400, 0x401])),
          target_vmpl=maybe(st.sampled_from([1, 3, 4])), perms=maybe(st.sampled_from([0, 1, 3, 0x20])),
          vmsa=maybe(GOOD_BOOL, BAD_BOOL))
    def rmpadjust(self, pfn, asid, gfn, target_vmpl, perms, vmsa):
        self.run(lambda: self.t.rmpadjust(pfn, asid=asid, gfn=gfn, target_vmpl=target_vmpl,
                                          perms=perms, vmsa=vmsa))

    @rule(pfn=maybe(PFNS), lo=maybe(st.sampled_from([0, 1, 3, 1 << 62 | 5 << 51 | 1])),
          hi=maybe(st.sampled_from([0, 0x1F])))
    def write_raw(self, pfn, lo, hi):
        self.run(lambda: self.t.write_raw(pfn, lo, hi))

    @rule(pfn=maybe(PFNS), in_use=maybe(GOOD_BOOL, BAD_BOOL))
    def set_in_use(self, pfn, in_use):
        self.run(lambda: self.t.set_in_use(pfn, in_use))

    @rule(pfn=maybe(PFNS), level=maybe(st.sampled_from([1, 2, 3]), st.sampled_from([True, 2.0, -1])),
          asid=maybe(st.sampled_from([1, 5])), private=st.booleans(),
          immutable=maybe(GOOD_BOOL, BAD_BOOL))
    def kernel(self, pfn, level, asid, private, immutable):
        if private:
            self.run(lambda: self.t.rmp_make_private(pfn, 0x400000, level, asid, immutable))
        else:
            self.run(lambda: self.t.rmp_make_shared(pfn, level))

    @rule(pfn=maybe(PFNS), is_private=maybe(GOOD_BOOL, BAD_BOOL))
    def npf(self, pfn, is_private):
        self.run(lambda: R.sev_handle_rmp_fault(self.t, 0x400000, pfn=pfn, is_private=is_private))

    @rule(which=st.sampled_from(["fields", "lookup", "states", "host", "guest"]),
          into_table=st.booleans(), n=st.integers(1, 4))
    def reads_with_bad_out(self, which, into_table, n):
        pf = np.array([0, 1, 512, 513][:n], np.uint64)
        t = self.t
        if into_table:
            area = t.buffer[BOOKKEEPING:BOOKKEEPING + 48 * n]
        else:
            area = pf.view(np.uint8)
        fn = {"fields": lambda: t.fields(pf, out=t.buffer[BOOKKEEPING:BOOKKEEPING + 40 * n]
                                         .view(FIELDS_DTYPE) if into_table else None),
              "lookup": lambda: t.lookup_batch(pf, asid=area[:2 * n].view(np.uint16)),
              "states": lambda: t.page_states(pf, out=area[:n]),
              "host": lambda: t.host_check_batch(pf, out=area[:n]),
              "guest": lambda: t.guest_check_batch(pf, pf, asid=1, out=area[:n])}[which]
        self.run(fn)

    @invariant()
    def entries_stay_consistent(self):
        # RMP_BOOKKEEPING is never written by any operation
        assert not self.t.buffer[:BOOKKEEPING].any()
        if self.t.level_index:                 # the index follows every write exactly
            self.t.check_level_index()
            pf = np.arange(0, NPFN, 7, dtype=np.uint64)
            r = self.t.lookup_batch(pf)
            assert [int(x) for x in r.level] == [self.t.snp_lookup_rmpentry(int(p))[1] for p in pf]


TestTrustMachine = TrustMachine.TestCase
TestTrustMachine.settings = settings(TestTrustMachine.settings, stateful_step_count=30)

