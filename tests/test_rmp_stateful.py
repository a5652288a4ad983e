"""Random sequences of RMPUPDATE / PSMASH / PVALIDATE / RMPADJUST: C core vs reference,
with the architectural invariants checked after every step."""
import numpy as np
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pykvmmu.ref import rmp as ref
from pykvmmu.rmp import BOOKKEEPING, Rc, RmpFlags, RmpTable

NPFN = 3 * 512 + 37          # three full 2M blocks and a partial one
PFNS = st.sampled_from([0, 0, 1, 2, 300, 511, 512, 512, 513, 777, 1023, 1024, 1024, 1025,
                        1535, 1536, 1537, NPFN - 1, NPFN, NPFN + 3])
ASIDS = st.sampled_from([0, 1, 2, 0x3FF, 0x400])
GPAS = st.sampled_from([0, 0x1000, 0x200000, 0x400000, 0x401000, 0x123, 1 << 51])


def make_machine(flags):
    class RmpMachine(RuleBasedStateMachine):
        @initialize()
        def setup(self):
            self.t = RmpTable(np.zeros(BOOKKEEPING + 16 * NPFN, np.uint8), flags=flags)
            self.r = ref.RefRmp(NPFN, flags)

        # -------------------------------------------------------- helpers
        def snapshot(self):
            return self.t.entries.copy()

        def compare(self, rc_c, rc_r, before, what=""):
            event(f"{what} -> {Rc(rc_r).name}")
            assert int(rc_c) == rc_r
            mine = self.t.entries
            theirs = np.array(self.r.e, dtype=np.uint64)
            bad = np.nonzero((mine != theirs).any(axis=1))[0]
            assert bad.size == 0, f"pfn {bad[0]}: C {mine[bad[0]]} ref {theirs[bad[0]]}"
            if rc_r not in (ref.SUCCESS,):
                # A failed instruction (or CF=1 no-update) leaves every entry unchanged.
                assert np.array_equal(before, mine)

        def pick(self, pfn, pick):
            """Mostly an assigned pfn (so that guest instructions reach their deep paths)."""
            owned = np.nonzero(self.t.entries[:, 0] & np.uint64(1))[0]
            if pick % 4 and owned.size:
                return int(owned[pick % owned.size])
            return pfn

        def matched(self, pfn, size):
            """With a size matching the governing entry: the 2M page's head and size 1."""
            if self.r.covered(pfn) and self.r.governing(pfn)[1]:
                return pfn - pfn % 512, 1
            return pfn, 0 if size == 1 else size

        def guest_args(self, pfn, own_asid, own_gfn, asid, gfn):
            if self.r.covered(pfn):
                g, in2m = self.r.governing(pfn)
                lo = self.r.e[g][0]
                if own_asid:
                    asid = ref.field(lo, "asid")
                if own_gfn:
                    gfn = ref.field(lo, "gpa") + (pfn % 512 if in2m else 0)
            return asid, gfn

        # -------------------------------------------------------- rules
        @rule(pfn=PFNS, gpa=GPAS, assigned=st.sampled_from([0, 1, 1, 2]),
              pagesize=st.sampled_from([0, 1, 1]), immutable=st.sampled_from([0, 0, 0, 1]),
              asid=ASIDS, well_formed=st.sampled_from([True, True, True, False]))
        def rmpupdate(self, pfn, gpa, assigned, pagesize, immutable, asid, well_formed):
            if well_formed:          # mostly states the hardware accepts, to reach deep paths
                assigned = min(assigned, 1)
                asid = (asid % 2 + 1) if assigned else 0
                gpa = (gpa >> 21 << 21) % (1 << 40)
            before = self.snapshot()
            rc_c = self.t.rmpupdate(pfn, gpa=gpa, assigned=assigned, pagesize=pagesize,
                                    immutable=immutable, asid=asid)
            rc_r = self.r.rmpupdate(pfn, gpa, assigned, pagesize, immutable, asid)
            self.compare(rc_c, rc_r, before, "rmpupdate")

        @rule(pfn=PFNS, pick=st.integers(0, 1 << 20))
        def psmash(self, pfn, pick):
            heads = [h for h in range(0, NPFN - 511, 512) if self.r.is_2m(h)]
            if pick % 2 and heads:
                pfn = heads[pick % len(heads)]
            before = self.snapshot()
            self.compare(self.t.psmash(pfn), self.r.psmash(pfn), before, "psmash")

        @rule(pfn=PFNS, pick=st.integers(0, 1 << 20), own_asid=st.sampled_from([True, True, True, False]), own_gfn=st.sampled_from([True, True, True, False]), asid=ASIDS,
              gfn=st.sampled_from([0, 1, 0x200, 0x201]), vmpl=st.sampled_from([0, 0, 0, 0, 1, 3]),
              size=st.sampled_from([0, 0, 1, 2]), validate=st.sampled_from([0, 1, 1]))
        def pvalidate(self, pfn, pick, own_asid, own_gfn, asid, gfn, vmpl, size, validate):
            pfn = self.pick(pfn, pick)
            vmpl, size = (0 if vmpl == 3 else vmpl), (size if size < 2 or own_gfn else 0)
            if pick % 3:
                pfn, size = self.matched(pfn, size)
            if pick % 5 == 0:        # a well-formed validate, so that RMPADJUST has targets
                own_asid = own_gfn = True
                vmpl, validate = 0, 1
            asid, gfn = self.guest_args(pfn, own_asid, own_gfn, asid, gfn)
            before = self.snapshot()
            c = self.t.pvalidate(pfn, asid=asid, gfn=gfn, size=size, validate=validate, vmpl=vmpl)
            rc_r, ei_r = self.r.pvalidate(pfn, asid, vmpl, gfn, size, validate)
            assert c.exitinfo == ei_r
            self.compare(c.rc, rc_r, before, "pvalidate")

        @rule(pfn=PFNS, pick=st.integers(0, 1 << 20), own_asid=st.sampled_from([True, True, True, False]), own_gfn=st.sampled_from([True, True, True, False]), asid=ASIDS,
              gfn=st.sampled_from([0, 0x200]), vmpl=st.sampled_from([0, 0, 0, 1, 3]),
              tvmpl=st.sampled_from([0, 1, 1, 2, 3, 4]), perms=st.sampled_from([0, 1, 3, 3, 0xF, 0x1F, 0x20]),
              size=st.sampled_from([0, 1]), vmsa=st.booleans())
        def rmpadjust(self, pfn, pick, own_asid, own_gfn, asid, gfn, vmpl, tvmpl, perms, size,
                      vmsa):
            pfn = self.pick(pfn, pick)
            valid = np.nonzero(self.t.entries[:, 0] >> np.uint64(62) & np.uint64(1))[0]
            if pick % 2 and valid.size:          # mostly a validated page
                pfn = int(valid[pick % valid.size])
            if pick % 3:
                pfn, size = self.matched(pfn, size)
            asid, gfn = self.guest_args(pfn, own_asid, own_gfn, asid, gfn)
            before = self.snapshot()
            c = self.t.rmpadjust(pfn, asid=asid, gfn=gfn, target_vmpl=tvmpl, perms=perms,
                                 size=size, vmsa=vmsa, vmpl=vmpl)
            rc_r, ei_r = self.r.rmpadjust(pfn, asid, vmpl, gfn, size, tvmpl, perms, int(vmsa))
            assert c.exitinfo == ei_r
            self.compare(c.rc, rc_r, before, "rmpadjust")

        @rule(pfn=PFNS, lock=st.booleans())
        def toggle_lock(self, pfn, lock):
            if not self.r.covered(pfn):
                return
            self.t.set_in_use(pfn, lock)
            lo = self.r.e[pfn][0]
            self.r.e[pfn][0] = ref.put(lo, "lock", int(lock))

        @rule(pfn=PFNS, level=st.sampled_from([1, 2, 3]), npt=st.sampled_from([1, 2]),
              kind=st.integers(0, 4), c_bit=st.booleans(), snp=st.booleans(),
              vmpl=st.integers(0, 3), user=st.booleans(), own=st.booleans())
        def checks(self, pfn, level, npt, kind, c_bit, snp, vmpl, user, own):
            h = self.t.host_check(pfn, level, user=user)
            assert (int(h.check), h.error_code) == self.r.host_check(pfn, level, user)
            asid, gfn = self.guest_args(pfn, own, own, 1, 0)
            g = self.t.guest_check(pfn, gfn, asid=asid, vmpl=vmpl, npt_level=npt, kind=kind,
                                   c_bit=c_bit, snp_active=snp, user=user)
            event(f"guest check {g.check.name}")
            assert (int(g.check), g.fault, g.error_code) == self.r.guest_check(
                pfn, gfn, asid, vmpl, npt, kind, c_bit, snp, user)
            if self.r.covered(pfn):
                assert self.t.snp_lookup_rmpentry(pfn) == tuple(self.r.lookup(pfn)[:2])
            assert int(self.t.page_state(pfn)) == self.r.page_state(pfn)

        # -------------------------------------------------------- invariants
        @invariant()
        def architectural(self):
            if not hasattr(self, "t"):
                return
            lo = self.t.entries[:, 0]
            full = (NPFN // 512) * 512
            blocks = lo[:full].reshape(-1, 512)
            assigned = (blocks & 1).astype(bool)
            head_2m = (blocks[:, 0] & 3) == 3
            # A 2M assigned entry implies its 511 middle entries are assigned.
            assert assigned[head_2m, 1:].all()
            # Elsewhere the head's sub-page count equals the assigned 4K entries after it.
            count = (blocks[:, 0] >> np.uint64(3)) & np.uint64(0x1FF)
            small = ~head_2m
            assert np.array_equal(count[small], assigned[small, 1:].sum(axis=1))
            # No page is both hypervisor-owned and guest-owned: the pfn's own Assigned bit
            # agrees with the entry that governs it.
            governs = np.where(head_2m[:, None], assigned[:, :1], assigned)
            assert np.array_equal(governs, assigned)
            # A hypervisor-owned entry has ASID 0 and is not validated.
            hv = (lo & np.uint64(1)) == 0
            assert not ((lo[hv] >> np.uint64(51)) & np.uint64(0x3FF)).any()
            assert not ((lo[hv] >> np.uint64(62)) & np.uint64(1)).any()

    return RmpMachine


_SETTINGS = settings(max_examples=50, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("flags", [RmpFlags.APM, *[f for f in RmpFlags if f],
                                   RmpFlags(sum(f for f in RmpFlags))],
                         ids=lambda f: f.name or "ALL")
def test_rmp_state_machine(flags):
    machine = make_machine(int(flags))
    machine.TestCase.settings = _SETTINGS
    machine.TestCase().runTest()


def test_return_codes_agree_with_reference_constants():
    assert (Rc.FAIL_INPUT, Rc.FAIL_PERMISSION, Rc.FAIL_INUSE, Rc.FAIL_OVERLAP,
            Rc.FAIL_SIZEMISMATCH, Rc.FAIL_BADADDR, Rc.NOUPDATE, Rc.NPF, Rc.VC, Rc.GP) == (
        ref.FAIL_INPUT, ref.FAIL_PERMISSION, ref.FAIL_INUSE, ref.FAIL_OVERLAP,
        ref.FAIL_SIZEMISMATCH, ref.FAIL_BADADDR, ref.NOUPDATE, ref.NPF, ref.VC, ref.GP)
